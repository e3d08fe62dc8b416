import BanditoreRuntime

try await ServiceRunner.run(ServiceDescription(name: "banditore-dispatch-telegram", defaultPort: 8084))
