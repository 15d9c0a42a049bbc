"""The LLM-based recommender: prompts, training, trie-constrained decoding, alternation."""
