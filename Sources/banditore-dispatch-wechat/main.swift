import BanditoreRuntime

try await ServiceRunner.run(ServiceDescription(name: "banditore-dispatch-wechat", defaultPort: 8085))
