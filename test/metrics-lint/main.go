// Command metrics-lint reads a scrape in Prometheus' text format on standard
// input and checks it as `promtool check metrics` does: parsed by
// Prometheus' own parser (expfmt), then linted by promlint (counters ending
// in _total, base units, HELP text, histogram and summary suffixes,
// duplicate series). Each problem is printed on a line of its own,
// "<metric>: <problem>". Exit status: 0 clean, 1 lint problems, 2 the
// input does not parse.
package main

import (
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func main() {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "parse error: %v\n", err)
		os.Exit(2)
	}
	list := make([]*dto.MetricFamily, 0, len(families))
	for _, family := range families {
		list = append(list, family)
	}
	problems, err := promlint.NewWithMetricFamilies(list).Lint()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lint error: %v\n", err)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Printf("%s: %s\n", p.Metric, p.Text)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}
