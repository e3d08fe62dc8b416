import BanditoreRegistry

/// Applies citizens' commands and replies; see `RegistryService` and the README for its settings.
try await RegistryService.run()
