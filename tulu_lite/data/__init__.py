"""Data: the conversation format, converters for the TÜLU sources, mixtures, encoding and statistics."""
