"""Trust: how much this node trusts each identity, and the policy built on it."""
