"""Operator: kopf handlers and the pure resolve() from policies and pods to node plans."""
