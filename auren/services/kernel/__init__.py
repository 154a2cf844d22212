"""The small kernel every service shares: problem+json, capped body reading, the health
document and JSON responses, each defined once."""
