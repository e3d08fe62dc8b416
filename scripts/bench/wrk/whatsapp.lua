-- A template send per request, each to a new number (no pair limit in play).
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sim-whatsapp-token"
request = function()
    n = n + 1
    local to = string.format("39%010d", n * 7 + math.random(0, 6))
    local body = '{"messaging_product":"whatsapp","recipient_type":"individual","to":"' .. to ..
        '","type":"template","template":{"name":"banditore_bulletin","language":{"code":"it"},"components":' ..
        '[{"type":"body","parameters":[{"type":"text","text":"Allerta meteo"},' ..
        '{"type":"text","text":"Scuole chiuse domani per neve in tutto il territorio comunale."}]}]}}'
    return wrk.format(nil, "/v21.0/1065403/messages", nil, body)
end
