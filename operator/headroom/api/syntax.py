"""Syntax of label selectors and quantities in the policy kinds: one definition for the
operator's parser (selector.py, policy.py) and the policy CRDs (crds/*.yaml carry these
exact strings in their patterns and CEL rules; tests/unit/test_crds.py checks that).

Label keys and values follow Kubernetes (apimachinery validation.IsQualifiedName and
IsValidLabelValue). Quantities are the Kubernetes quantity grammar restricted so that
every accepted string is far below 2^63 bytes: the number of digits before the unit is
limited by the unit, which a regular expression (and so the CRD schema, without the
CEL quantity library that Kubernetes 1.28 lacks in CRD rules) can check.
"""

from __future__ import annotations

import re

LABEL_NAME_MAX = 63
LABEL_PREFIX_MAX = 253
LABEL_VALUE_MAX = 63
LABEL_KEY_MAX = LABEL_PREFIX_MAX + 1 + LABEL_NAME_MAX
# Bounds on list and map sizes, so the API server's CEL cost estimate stays in budget.
MAX_MATCH_LABELS = 64
MAX_MATCH_EXPRESSIONS = 64
MAX_EXPRESSION_VALUES = 64

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
# A qualified name: optional DNS subdomain prefix and '/', then a name of <= 63 chars.
LABEL_KEY_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?{_NAME}$"
# ...whose prefix is at most 253 characters (checked apart: RE2 cannot count a group).
LABEL_KEY_LENGTH_PATTERN = rf"^([^/]{{1,{LABEL_PREFIX_MAX}}}/)?[^/]{{1,{LABEL_NAME_MAX}}}$"
LABEL_VALUE_PATTERN = rf"^({_NAME})?$"

LABEL_KEY_MESSAGE = (
    "must be a qualified name: an optional DNS subdomain prefix (lowercase, at most 253 "
    "characters) and '/', then a name of at most 63 characters (alphanumerics, '-', '_' "
    "or '.', starting and ending with an alphanumeric)")
LABEL_VALUE_MESSAGE = (
    "must be empty or at most 63 characters (alphanumerics, '-', '_' or '.', starting and "
    "ending with an alphanumeric)")

_FRACTION = r"(\.[0-9]{1,9})?"
# Digits before the unit: 18 - 3 x the unit's rank, so the largest value (999...Ki =
# 1.02e18, 999Pi = 1.13e18) stays far below 2^63 = 9.2e18. No E/Ei: nobody means that.
BYTES_PATTERN = ("^("
                 rf"[0-9]{{1,18}}{_FRACTION}"
                 rf"|[0-9]{{1,15}}{_FRACTION}(k|Ki)"
                 rf"|[0-9]{{1,12}}{_FRACTION}(M|Mi)"
                 rf"|[0-9]{{1,9}}{_FRACTION}(G|Gi)"
                 rf"|[0-9]{{1,6}}{_FRACTION}(T|Ti)"
                 rf"|[0-9]{{1,3}}{_FRACTION}(P|Pi)"
                 rf"|[0-9]{{1,9}}{_FRACTION}[eE][+]?[0-9]"
                 ")$")
BYTES_MESSAGE = (
    "must be a quantity such as 512Mi or 3G, with at most 18 digits without a unit, 15 "
    "with k/Ki, 12 with M/Mi, 9 with G/Gi, 6 with T/Ti, 3 with P/Pi, 9 digits and a "
    "one-digit exponent (2e9), and at most 9 decimals")
# CPU cores: at most MAX_CPU_BUDGET_CORES (1024), in steps of 1m (at most 3 decimals).
_CORES = r"(0|[1-9][0-9]{0,2}|10[01][0-9]|102[0-3])"
CPU_PATTERN = ("^("
               rf"{_CORES}(\.[0-9]{{1,3}})?"
               r"|1024(\.0{1,3})?"
               r"|([1-9][0-9]{0,5}|10[01][0-9]{4}|102[0-3][0-9]{3}|1024000)m"
               ")$")
CPU_MESSAGE = ("must be between 1m and 1024 cores, as cores with at most 3 decimals "
               "(0.5, 2) or millicores (500m)")
# A quantity is zero unless a digit before the unit or exponent is non-zero.
NONZERO_PATTERN = "^[0-9.]*[1-9]"
QUANTITY_MAX_LENGTH = 32

_KEY = re.compile(LABEL_KEY_PATTERN)
_KEY_LENGTH = re.compile(LABEL_KEY_LENGTH_PATTERN)
_VALUE = re.compile(LABEL_VALUE_PATTERN)
_BYTES = re.compile(BYTES_PATTERN)
_CPU = re.compile(CPU_PATTERN)
_NONZERO = re.compile(NONZERO_PATTERN)


def _full(rx: re.Pattern[str], s: str) -> bool:
    # Python's '$' also matches before a final newline, Go's does not: no newline at all
    return "\n" not in s and rx.match(s) is not None


def is_label_key(s: object) -> bool:
    return isinstance(s, str) and len(s) <= LABEL_KEY_MAX and _full(_KEY, s) \
        and _full(_KEY_LENGTH, s)


def is_label_value(s: object) -> bool:
    return isinstance(s, str) and len(s) <= LABEL_VALUE_MAX and _full(_VALUE, s)


def is_bytes_quantity(s: str) -> bool:
    return len(s) <= QUANTITY_MAX_LENGTH and _full(_BYTES, s) and _full(_NONZERO, s)


def is_cpu_quantity(s: str) -> bool:
    return len(s) <= QUANTITY_MAX_LENGTH and _full(_CPU, s) and _full(_NONZERO, s)
