// Command metrics-lint reads a scrape in Prometheus' text format on standard
// input and checks it as `promtool check metrics` does: parsed by
// Prometheus' own parser (expfmt), then linted by promlint (counters ending
// in _total, base units, HELP text, histogram and summary suffixes,
// duplicate series); and each histogram's series as histogram_quantile
// needs them, which promlint leaves (buckets cumulative, a +Inf bucket equal
// to _count, a _sum). Each problem is printed on a line of its own,
// "<metric>: <problem>". Exit status: 0 clean, 1 lint problems, 2 the
// input does not parse.
package main

import (
	"fmt"
	"math"
	"os"
	"strings"

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
	linter := promlint.NewWithMetricFamilies(list)
	linter.AddCustomValidations(histogramSeries)
	problems, err := linter.Lint()
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

// histogramSeries reports each series of a histogram whose buckets are not
// cumulative, whose last bucket is not +Inf holding its _count, or that
// lacks its _count or _sum.
func histogramSeries(family *dto.MetricFamily) []error {
	if family.GetType() != dto.MetricType_HISTOGRAM {
		return nil
	}
	var problems []error
	for _, metric := range family.GetMetric() {
		h := metric.GetHistogram()
		series := labelSet(metric)
		if h.SampleCount == nil || h.SampleSum == nil {
			problems = append(problems, fmt.Errorf("series %s lacks its _count or _sum", series))
			continue
		}
		buckets := h.GetBucket()
		if len(buckets) == 0 || !math.IsInf(buckets[len(buckets)-1].GetUpperBound(), 1) {
			problems = append(problems, fmt.Errorf("series %s has no +Inf bucket", series))
			continue
		}
		for i := 1; i < len(buckets); i++ {
			if buckets[i].GetUpperBound() <= buckets[i-1].GetUpperBound() || buckets[i].GetCumulativeCount() < buckets[i-1].GetCumulativeCount() {
				problems = append(problems, fmt.Errorf("series %s: bucket le=%g does not follow le=%g cumulatively", series, buckets[i].GetUpperBound(), buckets[i-1].GetUpperBound()))
			}
		}
		if buckets[len(buckets)-1].GetCumulativeCount() != h.GetSampleCount() {
			problems = append(problems, fmt.Errorf("series %s: the +Inf bucket is not _count", series))
		}
	}
	return problems
}

// labelSet is a series' labels as a scrape shows them: {a="x",b="y"}.
func labelSet(metric *dto.Metric) string {
	pairs := make([]string, 0, len(metric.GetLabel()))
	for _, l := range metric.GetLabel() {
		pairs = append(pairs, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "{" + strings.Join(pairs, ",") + "}"
}
