import BanditoreRuntime

try await ServiceRunner.run(ServiceDescription(name: "banditore-composer", defaultPort: 8082))
