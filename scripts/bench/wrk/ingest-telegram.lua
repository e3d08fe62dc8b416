-- A Telegram update per request (the secret-token header as Telegram sends it), each from another chat, each
-- with a new update_id: ingest decodes it, makes a subscribe command and publishes it with a confirm.
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Telegram-Bot-Api-Secret-Token"] = os.getenv("TELEGRAM_SECRET") or "sim-telegram-secret"
request = function()
    n = n + 1
    local id = n * 1000 + math.random(0, 999)
    local chat = 6000000000 + id
    local body = '{"update_id":' .. id .. ',"message":{"message_id":' .. n .. ',"from":{"id":' .. chat ..
        ',"is_bot":false,"first_name":"Maria","language_code":"it"},"chat":{"id":' .. chat ..
        ',"first_name":"Maria","type":"private"},"date":1767261600,"text":"ATTIVA ISCRIZIONE"}}'
    return wrk.format(nil, "/webhooks/telegram", nil, body)
end
