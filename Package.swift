// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

let runtimeDependencies: [Target.Dependency] = [
    "BanditoreRuntime",
    "BanditoreAMQP",
    "BanditorePostgres",
    "BanditoreCore",
    "BanditoreStore",
    .product(name: "Logging", package: "swift-log"),
    .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
]

/// One executable per service; each is a thin `main` over `BanditoreRuntime`.
let services = [
    "banditore-ingest",
    "banditore-registry",
    "banditore-composer",
    "banditore-dispatch-whatsapp",
    "banditore-dispatch-telegram",
    "banditore-dispatch-wechat",
    "banditore-provider-sim",
]

let package = Package(
    name: "banditore",
    platforms: [.macOS(.v15)],
    products: services.map { .executable(name: $0, targets: [$0]) } + [
        .executable(name: "banditore", targets: ["banditore"]),
        .executable(name: "banditore-bench", targets: ["banditore-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(
            url: "https://github.com/apple/swift-configuration", from: "1.4.0",
            traits: [.defaults, "CommandLineArguments"]
        ),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
    ],
    targets: [
        // MARK: C libraries
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),

        // MARK: Libraries
        .target(
            name: "BanditoreConcurrency",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreAMQP",
            dependencies: [
                "CRabbitMQ",
                "BanditoreConcurrency",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditorePostgres",
            dependencies: [
                "CLibPQ",
                "BanditoreConcurrency",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreCore",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreChannels",
            dependencies: [
                "BanditoreCore",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreStore",
            dependencies: [
                "BanditoreCore",
                "BanditorePostgres",
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Migrations")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreRuntime",
            dependencies: [
                "BanditoreAMQP",
                "BanditorePostgres",
                "BanditoreChannels",
                "BanditoreCore",
                "BanditoreStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreProviderSim",
            dependencies: [
                "BanditoreChannels",
                "BanditoreCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreDispatch",
            dependencies: [
                "BanditoreAMQP",
                "BanditoreConcurrency",
                "BanditoreChannels",
                "BanditoreCore",
                "BanditorePostgres",
                "BanditoreRuntime",
                "BanditoreStore",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreRegistry",
            dependencies: [
                "BanditoreAMQP",
                "BanditoreCore",
                "BanditorePostgres",
                "BanditoreRuntime",
                "BanditoreStore",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreComposer",
            dependencies: [
                "BanditoreAMQP",
                "BanditoreChannels",
                "BanditoreCore",
                "BanditorePostgres",
                "BanditoreRuntime",
                "BanditoreStore",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreIngest",
            dependencies: [
                "BanditoreAMQP",
                "BanditoreChannels",
                "BanditoreCore",
                "BanditorePostgres",
                "BanditoreRuntime",
                "BanditoreStore",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            resources: [.copy("openapi.yaml")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BanditoreTesting",
            dependencies: [
                "BanditoreAMQP",
                "BanditoreCore",
                "BanditorePostgres",
                "BanditoreRuntime",
                "BanditoreStore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Executables
        .executableTarget(
            name: "banditore",
            dependencies: runtimeDependencies + [
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "banditore-bench",
            dependencies: [
                "BanditoreAMQP",
                "BanditoreCore",
                "BanditorePostgres",
                "BanditoreTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "BanditoreConcurrencyTests",
            dependencies: ["BanditoreConcurrency"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreAMQPTests",
            dependencies: ["BanditoreAMQP", "BanditoreTesting"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditorePostgresTests",
            dependencies: ["BanditorePostgres", "BanditoreStore", "BanditoreTesting"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreChannelsTests",
            dependencies: ["BanditoreChannels", "BanditoreCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreProviderSimTests",
            dependencies: [
                "BanditoreProviderSim",
                "BanditoreChannels",
                "BanditoreTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreCoreTests",
            dependencies: ["BanditoreCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreDispatchTests",
            dependencies: [
                "BanditoreDispatch", "BanditoreCore", "BanditoreStore", "BanditoreTesting", "BanditoreRuntime",
                "BanditoreAMQP", .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreRegistryTests",
            dependencies: [
                "BanditoreRegistry", "BanditoreCore", "BanditoreChannels", "BanditoreStore",
                "BanditorePostgres", "BanditoreRuntime", "BanditoreTesting",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreIngestTests",
            dependencies: ["BanditoreIngest", "BanditoreCore", "BanditoreChannels"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreRuntimeTests",
            dependencies: ["BanditoreRuntime", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreStoreTests",
            dependencies: [
                "BanditoreStore", "BanditorePostgres", "BanditoreTesting",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BanditoreComposerTests",
            dependencies: ["BanditoreComposer", "BanditoreCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "BanditoreRuntime", "BanditoreTesting", "BanditoreAMQP", "BanditorePostgres", "BanditoreCore",
                "BanditoreStore", "BanditoreProviderSim",
            ],
            swiftSettings: swiftSettings
        ),
    ]
        + services.map {
            .executableTarget(
                name: $0,
                dependencies: runtimeDependencies
                    + ($0 == "banditore-provider-sim" ? ["BanditoreProviderSim"] : [])
                    + ($0.hasPrefix("banditore-dispatch-") ? ["BanditoreDispatch"] : [])
                    + ($0 == "banditore-ingest" ? ["BanditoreIngest"] : [])
                    + ($0 == "banditore-registry" ? ["BanditoreRegistry"] : [])
                    + ($0 == "banditore-composer" ? ["BanditoreComposer"] : []),
                swiftSettings: swiftSettings
            )
        }
)
