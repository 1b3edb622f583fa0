// Picks the next token from logits: greedy at temperature 0, else temperature / top-k / top-p sampling from a seeded generator.
namespace L2L.Model.Gpt2;

/// <summary>How the next token is chosen.</summary>
/// <param name="Temperature">0 for greedy (the arg-max, lowest id on ties); otherwise logits are divided by it before the softmax.</param>
/// <param name="TopK">Keep only the K most likely tokens (0: all).</param>
/// <param name="TopP">Keep the smallest set of most likely tokens whose probability reaches P (1: all).</param>
/// <param name="Seed">Seed of the sampling generator: the same seed, model and prompt give the same tokens.</param>
public sealed record SamplingOptions(float Temperature = 1f, int TopK = 0, float TopP = 1f, int Seed = 1337)
{
    /// <summary>Throws <see cref="ArgumentException"/> with the option's name when a value is out of range.</summary>
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature))
            throw new ArgumentException($"--temperature must be a finite number >= 0 (0 is greedy), got {Temperature}.");
        if (TopK < 0) throw new ArgumentException($"--top-k must be >= 0 (0 keeps every token), got {TopK}.");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"--top-p must be in (0, 1], got {TopP}.");
    }
}

/// <summary>Chooses tokens from logits according to <see cref="SamplingOptions"/>; one instance per generated sequence.</summary>
public sealed class TokenSampler
{
    private readonly SamplingOptions _options;
    private readonly Random _random;

    /// <summary>Creates a sampler; its generator is seeded with <see cref="SamplingOptions.Seed"/>.</summary>
    public TokenSampler(SamplingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _random = new Random(options.Seed);
    }

    /// <summary>The next token for <paramref name="logits"/> (V).</summary>
    /// <exception cref="InvalidDataException">A logit is NaN or infinite (the weights are broken).</exception>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (logits.Length == 0) throw new ArgumentException("No logits to choose from.", nameof(logits));
        for (var i = 0; i < logits.Length; i++)
            if (!float.IsFinite(logits[i]))
                throw new InvalidDataException($"The model produced a non-finite logit ({logits[i]}) for token {i}; the checkpoint's weights are not usable.");
        if (_options.Temperature == 0) return ArgMax(logits);

        // Most likely first; ties keep the lower id first so the order is fully determined.
        var order = new int[logits.Length];
        for (var i = 0; i < order.Length; i++) order[i] = i;
        var keys = logits.ToArray();
        Array.Sort(order, (a, b) => keys[a] != keys[b] ? keys[b].CompareTo(keys[a]) : a.CompareTo(b));
        var count = _options.TopK > 0 ? Math.Min(_options.TopK, order.Length) : order.Length;
        var max = (double)logits[order[0]];
        var weights = new double[count];
        var total = 0.0;
        for (var i = 0; i < count; i++)
        {
            weights[i] = Math.Exp((logits[order[i]] - max) / _options.Temperature);
            total += weights[i];
        }
        if (_options.TopP < 1)
        {
            var kept = 0.0;
            var n = 0;
            while (n < count && kept < _options.TopP * total) kept += weights[n++];
            count = Math.Max(1, n);
            total = kept;
        }
        var u = _random.NextDouble() * total;
        for (var i = 0; i < count; i++)
        {
            u -= weights[i];
            if (u < 0) return order[i];
        }
        return order[count - 1];
    }

    /// <summary>The index of the largest logit (the lowest such index on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
}
