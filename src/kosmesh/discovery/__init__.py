"""Finding and keeping peers: the redial schedule, the peer book (and, next, the DHT, gossip, mDNS, relays)."""
