import BanditoreIngest

/// The HTTP edge: the channels' webhooks and the admin API; see `IngestService` and the README for its settings.
try await IngestService.run()
