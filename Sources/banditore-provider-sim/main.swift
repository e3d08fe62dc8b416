import BanditoreProviderSim
import BanditoreRuntime
import Foundation

/// The three providers' APIs on loopback, for tests, the demo and benchmarks. Configuration: flags or environment
/// variables (`--sim-rate-limits false` or `SIM_RATE_LIMITS=false`); see `SimulatorConfiguration` and the README.
try await ServiceRunner.run(
    ServiceDescription(
        name: "banditore-provider-sim", defaultPort: 9090, usesBroker: false, usesDatabase: false, runtimeHTTP: false
    )
) { context in
    let registry = context.metrics
    let simulator = ProviderSimulator(
        configuration: SimulatorConfiguration(reader: context.reader), logger: context.logger,
        metrics: { String(decoding: registry.emitToBuffer(), as: UTF8.self) }
    )
    let server = SimulatorServer(
        simulator: simulator, host: context.configuration.httpHost, port: context.configuration.httpPort,
        logger: context.logger
    )
    return ServiceParts(services: [simulator, server])
}
