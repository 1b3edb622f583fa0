// Masked-language-model batches: (B, T) inputs and labels, from a labels file aligned with the data or
// masked on the fly with a counter-based RNG.
using System.Buffers.Binary;

namespace L2L.Model.Data;

/// <summary>
/// Produces BERT training batches. Sequence <c>b</c> of step <c>s</c> is window <c>w = s·B + b</c>: the T tokens
/// starting at <c>w·T</c> (wrapping around the data, as <see cref="BatchLoader"/> does, but without the one-token
/// shift: inputs and labels cover the same positions). With shuffling, window starts follow
/// <see cref="BatchLoader"/>'s seeded per-epoch permutation.
/// <para>
/// Labels (targets) are the original token id at positions the loss counts and <see cref="IgnoreIndex"/> elsewhere.
/// With a labels source, they are read from it at the same positions as the inputs, its
/// <see cref="LabelFileIgnore"/> (65535) becoming <see cref="IgnoreIndex"/>, and the inputs are the data as it
/// is. Without one, positions are masked on the fly: each position whose token is not <c>pad_token_id</c> is
/// selected with probability <see cref="MaskProbability"/>; a selected position's input becomes
/// <c>mask_token_id</c> with probability 0.8, a random id with probability 0.1 (uniform over
/// <c>[0, vocab_size)</c> without <c>pad_token_id</c>, so a replacement never turns into padding, which would
/// hide it from attention) and stays as it is with probability 0.1; its label is the original token.
/// </para>
/// <para>
/// Every masking decision is a hash of (seed, step, sequence b, position), not a draw from a running
/// generator, so a step's batch is the same whatever order or grouping (micro-batches, threads) it is filled in,
/// and a resumed run masks exactly as the uninterrupted one.
/// </para>
/// </summary>
public sealed class MlmBatchLoader
{
    /// <summary>The label value meaning "not a target" in a labels file (the largest uint16).</summary>
    public const int LabelFileIgnore = 65535;

    /// <summary>
    /// The target value the loss skips: the cross-entropy kernels' default <c>ignoreIndex</c> (-1), which
    /// <see cref="LabelFileIgnore"/> in a labels file maps to.
    /// </summary>
    public const int IgnoreIndex = -1;

    /// <summary>Fraction of non-pad positions selected for prediction when masking on the fly.</summary>
    public const double MaskProbability = 0.15;

    // Decisions come from disjoint bit fields of one 64-bit hash: 24 bits against the selection threshold,
    // 32 bits for the 80/10/10 choice; a second hash picks the random token.
    private const ulong SelectThreshold = (ulong)(MaskProbability * (1 << 24));

    private readonly ITokenSource _data;
    private readonly ITokenSource? _labels;
    private readonly BatchLoader _windows;
    private readonly int _seed;

    /// <summary>
    /// Creates a loader of <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens per step over
    /// <paramref name="data"/>, with labels from <paramref name="labels"/> or, when it is null, masked on the fly.
    /// </summary>
    /// <param name="data">The input tokens.</param>
    /// <param name="labels">Targets aligned with <paramref name="data"/> (same length), <see cref="LabelFileIgnore"/> where there is none; or null.</param>
    /// <param name="batch">Sequences per step, B.</param>
    /// <param name="seqLen">Tokens per sequence, T.</param>
    /// <param name="vocabSize">The model's vocabulary: random replacements are drawn below it, and every label must be below it.</param>
    /// <param name="padTokenId">Padding id: never selected, never drawn as a replacement.</param>
    /// <param name="maskTokenId">The <c>[MASK]</c> id.</param>
    /// <param name="shuffle">Visit window starts in a seeded order per epoch, as <see cref="BatchLoader"/> does.</param>
    /// <param name="seed">Seeds the masking and the shuffle.</param>
    /// <exception cref="InvalidDataException">The labels differ in length from the data, or hold an id that is neither below <paramref name="vocabSize"/> nor <see cref="LabelFileIgnore"/> (the whole source is checked here, once).</exception>
    public MlmBatchLoader(ITokenSource data, ITokenSource? labels, int batch, int seqLen, int vocabSize, int padTokenId, int maskTokenId,
        bool shuffle = false, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 2);
        ArgumentOutOfRangeException.ThrowIfNegative(padTokenId);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(padTokenId, vocabSize);
        ArgumentOutOfRangeException.ThrowIfNegative(maskTokenId);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(maskTokenId, vocabSize);
        _windows = new BatchLoader(data, batch, seqLen, shuffle, seed);
        _data = data;
        _labels = labels;
        _seed = seed;
        VocabSize = vocabSize;
        PadTokenId = padTokenId;
        MaskTokenId = maskTokenId;
        if (labels is not null) CheckLabels(data, labels, vocabSize);
    }

    /// <summary>A loader for <paramref name="config"/>'s vocabulary, padding and <c>[MASK]</c> ids.</summary>
    public static MlmBatchLoader For(Bert.BertConfig config, ITokenSource data, ITokenSource? labels, int batch, int seqLen,
        bool shuffle = false, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new MlmBatchLoader(data, labels, batch, seqLen, config.VocabSize, config.PadTokenId, config.MaskTokenId, shuffle, seed);
    }

    /// <summary>Sequences per step, B.</summary>
    public int Batch => _windows.Batch;

    /// <summary>Tokens per sequence, T.</summary>
    public int SeqLen => _windows.SeqLen;

    /// <summary>The vocabulary random replacements are drawn from (without <see cref="PadTokenId"/>).</summary>
    public int VocabSize { get; }

    /// <summary>Padding id.</summary>
    public int PadTokenId { get; }

    /// <summary>The <c>[MASK]</c> id.</summary>
    public int MaskTokenId { get; }

    /// <summary>True when labels come from a labels source rather than on-the-fly masking.</summary>
    public bool HasLabelSource => _labels is not null;

    /// <summary>The token where window number <paramref name="window"/> (= step·B + sequence) starts.</summary>
    public long WindowStart(long window) => _windows.WindowStart(window);

    /// <summary>
    /// Fills the (B, T) row-major <paramref name="inputs"/> and <paramref name="targets"/> of step
    /// <paramref name="step"/>; targets hold <see cref="IgnoreIndex"/> where the loss does not look.
    /// </summary>
    public void Fill(long step, Span<int> inputs, Span<int> targets)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        var size = (long)Batch * SeqLen;
        if (inputs.Length != size) throw new ArgumentException($"inputs has {inputs.Length} elements, expected B*T = {size}.", nameof(inputs));
        if (targets.Length != size) throw new ArgumentException($"targets has {targets.Length} elements, expected B*T = {size}.", nameof(targets));
        for (var b = 0; b < Batch; b++)
            FillSequence(step, b, inputs.Slice(b * SeqLen, SeqLen), targets.Slice(b * SeqLen, SeqLen));
    }

    /// <summary>
    /// Fills sequence <paramref name="sequence"/> (0 ≤ sequence &lt; B) of step <paramref name="step"/>: T inputs
    /// and T targets, exactly row <paramref name="sequence"/> of <see cref="Fill"/>.
    /// </summary>
    public void FillSequence(long step, int sequence, Span<int> inputs, Span<int> targets)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        ArgumentOutOfRangeException.ThrowIfNegative(sequence);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(sequence, Batch);
        if (inputs.Length != SeqLen) throw new ArgumentException($"inputs has {inputs.Length} elements, expected T = {SeqLen}.", nameof(inputs));
        if (targets.Length != SeqLen) throw new ArgumentException($"targets has {targets.Length} elements, expected T = {SeqLen}.", nameof(targets));
        var start = WindowStart(step * Batch + sequence);
        _data.Read(start, inputs);
        if (_labels is not null)
        {
            _labels.Read(start, targets);
            foreach (ref var label in targets)
                if (label == LabelFileIgnore) label = IgnoreIndex;
            return;
        }

        var key = SplitMix64.Mix(SplitMix64.Mix((ulong)(uint)_seed, (ulong)step), (ulong)sequence);
        for (var i = 0; i < inputs.Length; i++)
        {
            var token = inputs[i];
            var h = SplitMix64.Mix(key, (ulong)i);
            if (token == PadTokenId || (h >> 40) >= SelectThreshold)
            {
                targets[i] = IgnoreIndex;
                continue;
            }
            targets[i] = token;
            var choice = (int)(((h & 0xFFFF_FFFFUL) * 10) >> 32); // uniform in 0..9
            if (choice < 8)
                inputs[i] = MaskTokenId;
            else if (choice == 8)
            {
                // Uniform over the VocabSize - 1 ids other than padding.
                var r = (int)(((SplitMix64.Scramble(h) >> 32) * (ulong)(VocabSize - 1)) >> 32);
                inputs[i] = r < PadTokenId ? r : r + 1;
            }
        }
    }

    /// <summary>
    /// Opens an llm.c <c>.bin</c> labels file (see <see cref="MlmBatchLoader"/>). Raw-byte files are refused: a labels
    /// file needs <see cref="LabelFileIgnore"/>, which a byte cannot hold.
    /// </summary>
    /// <exception cref="InvalidDataException">Not an llm.c token file, or damaged (as <see cref="TokenData.Open"/> reports).</exception>
    public static ITokenSource OpenLabels(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Labels file '{path}' not found.", path);
        Span<byte> head = stackalloc byte[4];
        int read;
        using (var stream = File.OpenRead(path))
            read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        if (read < 4 || BinaryPrimitives.ReadInt32LittleEndian(head) != TokenData.Magic)
            throw new InvalidDataException(
                $"Labels file '{path}' is not an llm.c .bin token file (no magic {TokenData.Magic}). " +
                $"Write the labels as an llm.c .bin file aligned with the data: the target id at masked positions, {LabelFileIgnore} elsewhere.");
        // Every uint16 is accepted here; the loader checks labels against the model's vocabulary.
        return TokenData.Open(path, 1 << 16);
    }

    private static void CheckLabels(ITokenSource data, ITokenSource labels, int vocabSize)
    {
        if (labels.Length != data.Length)
            throw new InvalidDataException(
                $"Labels {labels.Description} have {labels.Length} tokens but the data {data.Description} has {data.Length}; " +
                "a labels file must hold one label per data token (the target id at masked positions, 65535 elsewhere).");
        var chunk = new int[1 << 16];
        for (long start = 0; start < labels.Length; start += chunk.Length)
        {
            var span = chunk.AsSpan(0, (int)Math.Min(chunk.Length, labels.Length - start));
            labels.Read(start, span);
            for (var i = 0; i < span.Length; i++)
                if (span[i] != LabelFileIgnore && (span[i] < 0 || span[i] >= vocabSize))
                    throw new InvalidDataException(
                        $"Labels {labels.Description} have label {span[i]} at position {start + i}, but the model's vocabulary has only {vocabSize} ids; " +
                        $"a label must be a token id below vocab_size or {LabelFileIgnore} (no target).");
        }
    }
}
