"""Layer 3, the feed service: the feed's rules over injected storage, search and listeners.
Imports only feedsvc.adapters and below."""
