import BanditoreRuntime

try await ServiceRunner.run(ServiceDescription(name: "banditore-registry", defaultPort: 8081))
