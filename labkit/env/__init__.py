"""Environment: machine and version fingerprint, pin check against requirements.txt, known-issue rules."""

from labkit.env.fingerprint import fingerprint, fingerprint_table, package_versions, quantization_probe
from labkit.env.pins import environment_yml_pins, pin_table, read_pins, style_pin_table
from labkit.env.rules import Finding, Rule, check_rules, findings_table, load_rules, style_findings_table

__all__ = [
    "fingerprint",
    "fingerprint_table",
    "package_versions",
    "quantization_probe",
    "pin_table",
    "read_pins",
    "environment_yml_pins",
    "style_pin_table",
    "Finding",
    "Rule",
    "check_rules",
    "findings_table",
    "load_rules",
    "style_findings_table",
]
