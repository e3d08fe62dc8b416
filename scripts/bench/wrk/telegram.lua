-- sendMessage per request, each to another chat.
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
    n = n + 1
    local body = '{"chat_id":' .. (5000000000 + n * 7 + math.random(0, 6)) ..
        ',"text":"Sciopero del trasporto scolastico venerdì: le linee 3 e 7 non passano.",' ..
        '"link_preview_options":{"is_disabled":true}}'
    return wrk.format(nil, "/bot7770001:sim-telegram-token/sendMessage", nil, body)
end
