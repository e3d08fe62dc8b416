import BanditoreRuntime

try await ServiceRunner.run(ServiceDescription(name: "banditore-dispatch-whatsapp", defaultPort: 8083))
