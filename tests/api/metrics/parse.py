"""Parses an OpenMetrics text (standard input) with the Prometheus Python client's parser and
prints its samples as JSON: [{"name", "labels", "value"}]. Exits 3 when the client is missing."""
import json
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    print("the Python prometheus_client package is not installed")
    sys.exit(3)

if len(sys.argv) > 1 and sys.argv[1] == "--probe":
    sys.exit(0)

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
print(json.dumps(samples))
