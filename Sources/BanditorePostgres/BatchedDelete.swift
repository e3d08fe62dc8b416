/// Runs `delete`, a statement that deletes at most `batch` rows and returns how many it deleted, again and again
/// until it deletes fewer (or the task is cancelled); returns the total. For retention: each batch a short statement
/// of its own, never one long lock over a large table.
public func deleteInBatches(of batch: Int, _ delete: (_ batch: Int) async throws -> Int) async throws -> Int {
    var total = 0
    while !Task.isCancelled {
        let deleted = try await delete(batch)
        total += deleted
        if deleted < batch { break }
    }
    return total
}
