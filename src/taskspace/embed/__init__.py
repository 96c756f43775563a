"""Task2Vec: task embeddings from the Fisher information of a probe network."""
