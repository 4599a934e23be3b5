/*
 * The OpenTelemetry SDK, imported only when tracing is on (see startTracing):
 * a process without an OTLP endpoint never loads it.
 */
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";

/**
 * A provider that exports in batches over OTLP/HTTP (JSON), configured by
 * the standard variables: endpoint, headers, timeouts (OTEL_EXPORTER_OTLP_*),
 * sampler (OTEL_TRACES_SAMPLER, default parentbased_always_on), batching
 * (OTEL_BSP_*), resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, over
 * `service.name` and `service.instance.id` given here).
 */
export function createTracerProvider(service: string, instance?: string): BasicTracerProvider {
  const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: service, ...(instance !== undefined && { [ATTR_SERVICE_INSTANCE_ID]: instance }) }).merge(detectResources({ detectors: [envDetector] }));
  return new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
}
