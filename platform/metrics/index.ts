/** Metrics for hot paths, rendered through a prom-client Registry at scrape time. */
export { counterFamily, histogramFamily, type CounterChild, type HistogramChild } from "./label-families.js";
