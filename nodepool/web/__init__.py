"""Pages the launcher's web server renders (beside the listings of
:mod:`nodepool.webapp`)."""
