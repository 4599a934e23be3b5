export { refusedExitCode, runService, stopOnStdinCloseVariable, type RunningService, type RunServiceOptions } from "./run-service.js";
export { createServiceHost, type ServiceHost, type ServiceHostOptions } from "./service-host.js";
export { grpcSecurityOf, grpcSecuritySettings, insecureGrpc, maxTokenTtlSetting, serverSecurity, serviceCallSecurity, tlsFileVariables, type GrpcSecurity } from "./grpc-security.js";
export { addressSettings, hostSettingsOf, instanceOf, platformSettings, type AddressSettings, type HostSettingsOptions, type HostVariables, type PlatformSettings } from "./service-settings.js";
export { ephemeralPortRange } from "./ephemeral-ports.js";
export { addressUnusable, isListening, portHolder } from "./listen-address.js";
