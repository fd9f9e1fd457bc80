"""Call recordings: finalisation, integrity (SHA-256), catalog and retention."""
