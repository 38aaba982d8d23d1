#!/usr/bin/env python3
"""Renders or lints a chart with Helm's own Go library (the helm-python-sdk package), no helm
binary needed. Used by tests/tests/charts.rs.

    render.py render CHART [VALUES.yaml] [--namespace NS] [--release NAME]
        prints {"<template path>": "<rendered manifest>", ...} as JSON
    render.py lint CHART [VALUES.yaml]
        prints Helm's lint report as JSON; exits 1 on a warning or an error (strict lint)
"""

import argparse
import json
import sys

import helm_python as helm

RELEASE = "mesh"
NAMESPACE = "mesh-system"
# Severity levels of Helm's lint support package: 1 info, 2 warning, 3 error.
WARNING = 2


def values_of(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return helm.values_from_yaml(f.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["render", "lint"])
    parser.add_argument("chart")
    parser.add_argument("values", nargs="?")
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--release", default=RELEASE)
    args = parser.parse_args()
    values = values_of(args.values)

    if args.action == "render":
        chart = helm.Chart.load(args.chart)
        # Validates the merged values against values.schema.json when the chart has one.
        chart.validate_schema(values)
        manifests = chart.render(
            values, name=args.release, namespace=args.namespace, is_install=True
        )
        json.dump(manifests, sys.stdout, indent=1, sort_keys=True)
        return 0

    report = helm.lint(args.chart, values, strict=True, namespace=args.namespace)
    json.dump(report, sys.stdout, indent=1, sort_keys=True)
    problems = [m for m in report.get("messages") or [] if m.get("severity", 0) >= WARNING]
    return 1 if problems or report.get("errors") else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except helm.HelmError as e:
        print(f"helm: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
