"""Gifting: the product that joins the wallet (money) and streams (live rooms).

Owns the catalog API, the HTTP API, settings, the command line and wiring.
May import ``wallet`` and ``streams``; neither imports ``gifting``.
"""
