"""Section 3.3: adaptive semantic token selection for token-based deep joint source-channel coding."""
