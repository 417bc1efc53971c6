"""Readers of what the loop leaves behind: the S3 archive, SQL over it, and the weekly report."""
