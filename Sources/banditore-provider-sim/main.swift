import BanditoreRuntime

try await ServiceRunner.run(
    ServiceDescription(name: "banditore-provider-sim", defaultPort: 9090, usesBroker: false, usesDatabase: false)
)
