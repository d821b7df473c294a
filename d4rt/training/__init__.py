"""Training D4RT: the paper's losses and query sampling, a Lightning module and ``fit``."""
