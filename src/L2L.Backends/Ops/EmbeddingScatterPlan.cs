// Groups the rows of a micro-batch by token on the host, so the embedding gradient needs no atomics on the device.
using System.Buffers;

namespace L2L.Backends.Ops;

/// <summary>
/// The host half of the deterministic token-embedding gradient: rows sorted by (token, row), the
/// start of each token's run, and the token of each run, packed into one int array that is
/// uploaded with the micro-batch.
/// </summary>
public static class EmbeddingScatterPlan
{
    /// <summary>Ints in a plan for <paramref name="rows"/> rows: order (N), segment starts (N + 1), segment tokens (N).</summary>
    public static int Length(int rows) => 3 * rows + 1;

    /// <summary>Fills <paramref name="plan"/> for <paramref name="tokens"/> and returns the number of distinct tokens.</summary>
    public static int Build(ReadOnlySpan<int> tokens, Span<int> plan)
    {
        var n = tokens.Length;
        if (n == 0)
            throw new ArgumentException("A plan needs at least one token.", nameof(tokens));
        if (plan.Length != Length(n))
            throw new ArgumentException($"The plan for {n} tokens has {Length(n)} ints, got {plan.Length}.", nameof(plan));
        var keys = ArrayPool<long>.Shared.Rent(n);
        try
        {
            for (var r = 0; r < n; r++)
            {
                if (tokens[r] < 0)
                    throw new ArgumentOutOfRangeException(nameof(tokens), tokens[r], $"Token id at row {r} is negative.");
                keys[r] = ((long)tokens[r] << 32) | (uint)r;
            }
            Array.Sort(keys, 0, n);
            var order = plan[..n];
            var starts = plan.Slice(n, n + 1);
            var segmentTokens = plan.Slice(2 * n + 1, n);
            var segments = 0;
            for (var k = 0; k < n; k++)
            {
                var token = (int)(keys[k] >> 32);
                order[k] = (int)(keys[k] & 0xFFFFFFFF);
                if (k == 0 || token != segmentTokens[segments - 1])
                {
                    starts[segments] = k;
                    segmentTokens[segments] = token;
                    segments++;
                }
            }
            starts[segments] = n;
            return segments;
        }
        finally
        {
            ArrayPool<long>.Shared.Return(keys);
        }
    }
}
