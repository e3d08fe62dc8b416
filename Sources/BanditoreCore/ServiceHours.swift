import Foundation

/// The windows in which normal bulletins may go out, in the town hall's time zone (urgent ones go at any hour).
///
/// Written as `mon-fri 09:00-13:00,15:00-18:00; sat 09:00-12:00`: day groups separated by `;`, each a day or a range
/// of days (`mon` … `sun`, a range may wrap: `sat-mon`) and its windows, `HH:MM-HH:MM`, end after start. Times are
/// wall-clock times in `timeZone`, so a window opens at 09:00 on both sides of a daylight-saving change.
public struct ServiceHours: Sendable, Hashable {
    public struct Window: Sendable, Hashable {
        /// 1 = Monday … 7 = Sunday.
        public var weekday: Int
        /// Minutes after midnight.
        public var start: Int
        public var end: Int
    }

    public let timeZone: TimeZone
    public let windows: [Window]

    /// The default, Empoli's office hours: Europe/Rome, Mon–Fri 09:00–13:00 and 15:00–18:00, Sat 09:00–12:00.
    public static let defaultSpecification = "mon-fri 09:00-13:00,15:00-18:00; sat 09:00-12:00"
    public static let `default` = try! ServiceHours(defaultSpecification, timeZone: "Europe/Rome")

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public init(_ specification: String, timeZone identifier: String) throws {
        guard let zone = TimeZone(identifier: identifier) else {
            throw ParseError(description: "unknown time zone \(identifier)")
        }
        let days = ["mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7]
        func minutes(_ text: Substring) throws -> Int {
            let parts = text.split(separator: ":")
            guard parts.count == 2, let hour = Int(parts[0]), let minute = Int(parts[1]), (0...24).contains(hour),
                (0...59).contains(minute), hour * 60 + minute <= 24 * 60
            else { throw ParseError(description: "bad time \(text) (HH:MM)") }
            return hour * 60 + minute
        }
        var windows: [Window] = []
        for group in specification.lowercased().split(separator: ";") {
            let fields = group.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count == 2 else {
                throw ParseError(
                    description: "bad day group \(group.trimmingCharacters(in: .whitespaces)) (days times)")
            }
            let range = fields[0].split(separator: "-")
            guard (1...2).contains(range.count), let first = days[String(range[0])],
                let last = days[String(range.last!)]
            else { throw ParseError(description: "bad days \(fields[0]) (mon … sun, or a range like mon-fri)") }
            var weekdays = [first]
            var day = first
            while day != last {
                day = day % 7 + 1
                weekdays.append(day)
            }
            for span in fields[1].split(separator: ",") {
                let ends = span.split(separator: "-")
                guard ends.count == 2 else { throw ParseError(description: "bad window \(span) (HH:MM-HH:MM)") }
                let start = try minutes(ends[0])
                let end = try minutes(ends[1])
                guard end > start else { throw ParseError(description: "window \(span) ends before it starts") }
                for weekday in weekdays { windows.append(Window(weekday: weekday, start: start, end: end)) }
            }
        }
        guard !windows.isEmpty else { throw ParseError(description: "no service window") }
        self.timeZone = zone
        self.windows = windows.sorted { ($0.weekday, $0.start) < ($1.weekday, $1.start) }
    }

    private var calendar: Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar
    }

    /// Whether a normal bulletin may go out at `date`.
    public func isOpen(at date: Date) -> Bool {
        nextOpening(from: date) == date
    }

    /// `date` itself when it falls inside a window, else the start of the next window.
    public func nextOpening(from date: Date) -> Date {
        let calendar = self.calendar
        let midnight = calendar.startOfDay(for: date)
        for offset in 0...7 {
            guard let day = calendar.date(byAdding: .day, value: offset, to: midnight) else { continue }
            // Calendar's weekday is 1 = Sunday … 7 = Saturday.
            let weekday = (calendar.component(.weekday, from: day) + 5) % 7 + 1
            for window in windows where window.weekday == weekday {
                guard let start = wallClock(window.start, on: day, calendar),
                    let end = wallClock(window.end, on: day, calendar)
                else { continue }
                if date < start { return start }
                if date < end { return date }
            }
        }
        return date  // unreachable with at least one window
    }

    private func wallClock(_ minutes: Int, on day: Date, _ calendar: Calendar) -> Date? {
        if minutes == 24 * 60 { return calendar.date(byAdding: .day, value: 1, to: day) }
        return calendar.date(bySettingHour: minutes / 60, minute: minutes % 60, second: 0, of: day)
    }
}
