"""The filter stage: the dataset builder that keeps only good teacher labels and says why each other row went."""
