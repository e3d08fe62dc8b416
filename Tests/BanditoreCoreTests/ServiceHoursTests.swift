import BanditoreCore
import Foundation
import Testing

@Suite("Service hours")
struct ServiceHoursTests {
    /// A wall-clock time in Rome.
    func rome(_ text: String) -> Date {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "Europe/Rome")
        formatter.dateFormat = "yyyy-MM-dd HH:mm"
        return formatter.date(from: text)!
    }

    @Test("the default windows: inside goes now, outside waits for the next opening, across days and weekends")
    func defaults() {
        let hours = ServiceHours.default
        // 2026-11-23 is a Monday.
        #expect(hours.nextOpening(from: rome("2026-11-23 10:15")) == rome("2026-11-23 10:15"))
        #expect(hours.isOpen(at: rome("2026-11-23 09:00")))
        #expect(!hours.isOpen(at: rome("2026-11-23 13:00")))
        #expect(hours.nextOpening(from: rome("2026-11-23 07:30")) == rome("2026-11-23 09:00"))
        #expect(hours.nextOpening(from: rome("2026-11-23 13:00")) == rome("2026-11-23 15:00"))
        #expect(hours.nextOpening(from: rome("2026-11-23 18:00")) == rome("2026-11-24 09:00"))
        #expect(hours.nextOpening(from: rome("2026-11-27 19:00")) == rome("2026-11-28 09:00"))  // Friday evening
        #expect(hours.nextOpening(from: rome("2026-11-28 12:00")) == rome("2026-11-30 09:00"))  // Saturday noon
        #expect(hours.nextOpening(from: rome("2026-11-29 11:00")) == rome("2026-11-30 09:00"))  // Sunday
    }

    @Test("a daylight-saving change: the window still opens at 09:00 Rome time")
    func daylightSaving() {
        // Summer time starts on Sunday 2026-03-29: Saturday after noon waits until Monday 09:00 CEST (07:00 UTC).
        let opening = ServiceHours.default.nextOpening(from: rome("2026-03-28 12:30"))
        #expect(opening == rome("2026-03-30 09:00"))
        #expect(opening == Date(timeIntervalSince1970: 1_774_854_000))  // 2026-03-30T07:00:00Z
    }

    @Test("other specifications: wrapping day ranges, a window to midnight; bad ones are refused with a reason")
    func specifications() throws {
        let hours = try ServiceHours("sat-mon 20:00-24:00", timeZone: "Asia/Shanghai")
        #expect(hours.windows.map(\.weekday) == [1, 6, 7])
        let shanghai = TimeZone(identifier: "Asia/Shanghai")!
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = shanghai
        let tuesday = calendar.date(from: DateComponents(year: 2026, month: 11, day: 24, hour: 21))!
        let saturday = calendar.date(from: DateComponents(year: 2026, month: 11, day: 28, hour: 20))!
        #expect(hours.nextOpening(from: tuesday) == saturday)
        #expect(
            hours.isOpen(at: calendar.date(from: DateComponents(year: 2026, month: 11, day: 30, hour: 23, minute: 59))!)
        )

        for bad in ["", "mon", "mon 9-13", "mon 13:00-09:00", "fun 09:00-10:00", "mon 09:00-25:00", "mon-fri 09:00"] {
            #expect(throws: ServiceHours.ParseError.self, "\(bad)") { try ServiceHours(bad, timeZone: "Europe/Rome") }
        }
        #expect(throws: ServiceHours.ParseError.self) { try ServiceHours("mon 09:00-10:00", timeZone: "Mars/Olympus") }
    }
}
