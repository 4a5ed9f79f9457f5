"""The web dashboard (Panel): a client of the API that reads and acts only through its HTTP endpoints."""
