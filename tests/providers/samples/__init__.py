"""Sample payloads of each provider, as its webhooks carry them: shared by the provider's own
tests and the property tests (test modules never import each other)."""
