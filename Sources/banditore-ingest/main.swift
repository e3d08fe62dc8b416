import BanditoreRuntime

try await ServiceRunner.run(ServiceDescription(name: "banditore-ingest", defaultPort: 8080))
