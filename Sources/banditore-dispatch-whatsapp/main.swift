import BanditoreDispatch

/// Delivers `dispatch.whatsapp` jobs to the provider; see `DispatchService` and the README for its settings.
try await DispatchService.run(channel: .whatsapp)
