"""API types of headroom.dev/v1alpha1: policies, plans, quantities, validation."""

GROUP = "headroom.dev"
VERSION = "v1alpha1"
