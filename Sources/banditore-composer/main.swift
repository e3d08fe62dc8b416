import BanditoreComposer

try await ComposerService.run()
