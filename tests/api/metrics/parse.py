"""Parses an OpenMetrics text (standard input) with the Prometheus Python client's OpenMetrics
parser, checks that its classic Prometheus text parser reads it too, and prints the samples as
JSON: [{"name", "labels", "value", "type"}]. Exits 3 when the client is missing."""
import json
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    from prometheus_client.parser import text_string_to_metric_families as classic_families
except ImportError:
    print("the Python prometheus_client package is not installed")
    sys.exit(3)

if len(sys.argv) > 1 and sys.argv[1] == "--probe":
    sys.exit(0)

text = sys.stdin.read()
classic = sum(len(family.samples) for family in classic_families(text))
samples = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
if classic != len(samples):
    sys.exit(f"the classic parser read {classic} samples, the OpenMetrics one {len(samples)}")
print(json.dumps(samples))
