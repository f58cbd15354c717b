def handle_exit(signum, frame):
    """rgunicorn's worker drains on TERM by itself."""
