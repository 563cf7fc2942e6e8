"""The admins' web pages (mounted at /admin) and the monthly assessment report."""
