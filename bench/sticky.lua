-- wrk script for the canary row: every request comes from another user
-- (header `x-user` and cookie `user`), so a sticky split sees a population.
request = function()
  local user = tostring(math.random(1, 1000000))
  return wrk.format(nil, nil, { ["x-user"] = user, ["Cookie"] = "user=" .. user })
end
