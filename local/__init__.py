"""Local development: a Functions-like host, a Partner Center simulator, Azurite and the demo. Never deployed."""
