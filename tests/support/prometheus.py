"""Reading Prometheus text expositions in tests."""

import re

_LABEL = re.compile(r'(\w+)="([^"]*)"')


def sample(metrics_text: str, name: str, **labels: object) -> float:
    """The value of the first series named `name` with these labels, 0 when there is none."""
    for line in metrics_text.splitlines():
        series, _, value = line.rpartition(" ")
        if not series.startswith(name + "{") and series != name:
            continue
        found = dict(_LABEL.findall(series))
        if all(found.get(key) == str(wanted) for key, wanted in labels.items()):
            return float(value)
    return 0.0
