// Double-precision BertForMaskedLM forward pass and masked-language-model loss, written from the model's
// definition over Hugging Face tensor names, to check the engine's BERT against.
using MathNet.Numerics;

namespace L2L.TestSupport.Reference;

/// <summary>
/// Hugging Face <c>BertForMaskedLM</c> in plain double loops. Letters: B sequences, T positions, H hidden,
/// I intermediate, V vocabulary, NH heads of <c>hs = H / NH</c>.
/// <list type="bullet">
/// <item>Embeddings: <c>word[id] + position[t] + token_type[type]</c> (type 0 unless given), then LayerNorm.</item>
/// <item>Each block, post-LN: <c>x = LN(x + Dense_o(SelfAttention(x)))</c>, then <c>x = LN(x + Dense_out(GELU(Dense_in(x))))</c>.
/// Attention has separate query, key and value projections, is bidirectional, scores <c>q.k / sqrt(hs)</c>, and
/// never attends a key whose input id is <c>pad_token_id</c>; a sequence of padding only attends nothing
/// (zero attention output), as the engine's kernels do.</item>
/// <item>Head: <c>LN(GELU(Dense(x)))</c>, then the decoder tied to the word embeddings plus <c>cls.predictions.bias</c>.</item>
/// <item>Loss: mean cross-entropy over the positions whose label is not the ignore index (NaN when there are none).</item>
/// </list>
/// GELU is the exact <c>0.5 x (1 + erf(x / sqrt 2))</c>; LayerNorm uses the biased variance. Linear weights are in
/// PyTorch's [out, in] layout: <c>y[o] = bias[o] + sum_i W[o * in + i] x[i]</c>.
/// </summary>
public static class BertReference
{
    /// <summary>The model's sizes (Hugging Face BERT config keys in brackets).</summary>
    /// <param name="VocabSize">V (<c>vocab_size</c>).</param>
    /// <param name="Hidden">H (<c>hidden_size</c>).</param>
    /// <param name="Layers">Encoder blocks (<c>num_hidden_layers</c>).</param>
    /// <param name="Heads">NH (<c>num_attention_heads</c>).</param>
    /// <param name="Intermediate">I (<c>intermediate_size</c>).</param>
    /// <param name="MaxPositions">Position embedding rows (<c>max_position_embeddings</c>).</param>
    /// <param name="TypeVocabSize">Token type embedding rows (<c>type_vocab_size</c>).</param>
    /// <param name="LayerNormEps">Added to the variance in every LayerNorm (<c>layer_norm_eps</c>).</param>
    /// <param name="PadTokenId">Keys with this input id are not attended (<c>pad_token_id</c>).</param>
    public sealed record Dims(int VocabSize, int Hidden, int Layers, int Heads, int Intermediate, int MaxPositions,
        int TypeVocabSize, double LayerNormEps, int PadTokenId);

    /// <summary>What the forward pass computed.</summary>
    /// <param name="Loss">Mean cross-entropy over the labelled positions; NaN when none is labelled.</param>
    /// <param name="LabelCount">Number of labelled positions.</param>
    /// <param name="Logits">(B, T, V) decoder output.</param>
    /// <param name="Hidden">(B, T, H) output of the last encoder block (before the head).</param>
    public sealed record Result(double Loss, int LabelCount, double[] Logits, double[] Hidden);

    /// <summary>Every tensor of the model with its shape, in Hugging Face's order and names (no decoder weight: it is the word embedding).</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> TensorShapes(Dims d)
    {
        ArgumentNullException.ThrowIfNull(d);
        int h = d.Hidden, i = d.Intermediate;
        var list = new List<(string, int[])>
        {
            ("bert.embeddings.word_embeddings.weight", [d.VocabSize, h]),
            ("bert.embeddings.position_embeddings.weight", [d.MaxPositions, h]),
            ("bert.embeddings.token_type_embeddings.weight", [d.TypeVocabSize, h]),
            ("bert.embeddings.LayerNorm.weight", [h]),
            ("bert.embeddings.LayerNorm.bias", [h]),
        };
        for (var l = 0; l < d.Layers; l++)
        {
            var p = $"bert.encoder.layer.{l}.";
            foreach (var proj in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            {
                list.Add((p + proj + ".weight", [h, h]));
                list.Add((p + proj + ".bias", [h]));
            }
            list.Add((p + "attention.output.LayerNorm.weight", [h]));
            list.Add((p + "attention.output.LayerNorm.bias", [h]));
            list.Add((p + "intermediate.dense.weight", [i, h]));
            list.Add((p + "intermediate.dense.bias", [i]));
            list.Add((p + "output.dense.weight", [h, i]));
            list.Add((p + "output.dense.bias", [h]));
            list.Add((p + "output.LayerNorm.weight", [h]));
            list.Add((p + "output.LayerNorm.bias", [h]));
        }
        list.Add(("cls.predictions.transform.dense.weight", [h, h]));
        list.Add(("cls.predictions.transform.dense.bias", [h]));
        list.Add(("cls.predictions.transform.LayerNorm.weight", [h]));
        list.Add(("cls.predictions.transform.LayerNorm.bias", [h]));
        list.Add(("cls.predictions.bias", [d.VocabSize]));
        return list;
    }

    /// <summary>
    /// Seeded parameters with Hugging Face names: normal(0, <paramref name="std"/>) weights and biases, LayerNorm
    /// weights around 1 and biases around 0 (each perturbed by normal(0, std)), so every tensor matters.
    /// </summary>
    public static Dictionary<string, float[]> RandomParameters(Dims d, int seed, double std = 0.2)
    {
        var result = new Dictionary<string, float[]>();
        var k = 0;
        foreach (var (name, shape) in TensorShapes(d))
        {
            var n = shape.Aggregate(1, (a, b) => a * b);
            var mean = name.EndsWith("LayerNorm.weight", StringComparison.Ordinal) ? 1.0 : 0.0;
            result[name] = TestData.Normal(seed * 1000 + ++k, n, std, mean);
        }
        return result;
    }

    /// <summary>
    /// Runs the model on <paramref name="inputIds"/> (B, T) and scores it against <paramref name="labels"/> (B, T).
    /// </summary>
    /// <param name="parameters">Tensors by Hugging Face name; names without the <c>bert.</c> prefix are accepted too,
    /// and <c>cls.predictions.decoder.weight</c>, if present, is ignored (the decoder is the word embedding).</param>
    /// <param name="d">The model's sizes.</param>
    /// <param name="inputIds">(B, T) token ids; <c>PadTokenId</c> marks keys not to attend.</param>
    /// <param name="tokenTypeIds">(B, T) segment ids, or null for all 0.</param>
    /// <param name="labels">(B, T) target ids, <paramref name="ignoreIndex"/> where the loss does not look.</param>
    /// <param name="b">B.</param>
    /// <param name="t">T, at most <c>MaxPositions</c>.</param>
    /// <param name="ignoreIndex">The label meaning "no target".</param>
    public static Result Forward(IReadOnlyDictionary<string, float[]> parameters, Dims d, int[] inputIds, int[]? tokenTypeIds,
        int[] labels, int b, int t, int ignoreIndex = -1)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(d);
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentNullException.ThrowIfNull(labels);
        if (inputIds.Length != b * t || labels.Length != b * t || (tokenTypeIds is not null && tokenTypeIds.Length != b * t))
            throw new ArgumentException($"inputIds, labels and tokenTypeIds must each have B*T = {b * t} elements.");
        if (t > d.MaxPositions) throw new ArgumentException($"T = {t} exceeds max_position_embeddings = {d.MaxPositions}.");
        if (d.Hidden % d.Heads != 0) throw new ArgumentException($"hidden {d.Hidden} is not a multiple of heads {d.Heads}.");
        var shapes = TensorShapes(d).ToDictionary(x => x.Name, x => x.Shape.Aggregate(1, (p, q) => p * q));
        double[] P(string name)
        {
            if (!parameters.TryGetValue(name, out var value) && !(name.StartsWith("bert.", StringComparison.Ordinal) && parameters.TryGetValue(name[5..], out value)))
                throw new KeyNotFoundException($"Parameter '{name}' is missing.");
            if (value.Length != shapes[name]) throw new ArgumentException($"Parameter '{name}' has {value.Length} elements, expected {shapes[name]}.");
            return value.Select(v => (double)v).ToArray();
        }

        int h = d.Hidden, n = b * t;
        var word = P("bert.embeddings.word_embeddings.weight");
        var position = P("bert.embeddings.position_embeddings.weight");
        var type = P("bert.embeddings.token_type_embeddings.weight");

        // Embeddings (N, H).
        var x = new double[n * h];
        for (var r = 0; r < n; r++)
        {
            int id = inputIds[r], pos = r % t, tt = tokenTypeIds?[r] ?? 0;
            if (id < 0 || id >= d.VocabSize) throw new ArgumentException($"Token id {id} at {r} is outside the vocabulary.");
            if (tt < 0 || tt >= d.TypeVocabSize) throw new ArgumentException($"Token type {tt} at {r} is outside type_vocab_size.");
            for (var c = 0; c < h; c++)
                x[r * h + c] = word[id * h + c] + position[pos * h + c] + type[tt * h + c];
        }
        x = LayerNorm(x, h, P("bert.embeddings.LayerNorm.weight"), P("bert.embeddings.LayerNorm.bias"), d.LayerNormEps);

        for (var l = 0; l < d.Layers; l++)
        {
            var p = $"bert.encoder.layer.{l}.";
            var q = Linear(x, h, h, P(p + "attention.self.query.weight"), P(p + "attention.self.query.bias"));
            var k = Linear(x, h, h, P(p + "attention.self.key.weight"), P(p + "attention.self.key.bias"));
            var v = Linear(x, h, h, P(p + "attention.self.value.weight"), P(p + "attention.self.value.bias"));
            var context = SelfAttention(q, k, v, inputIds, d, b, t);
            var attended = Linear(context, h, h, P(p + "attention.output.dense.weight"), P(p + "attention.output.dense.bias"));
            x = LayerNorm(Add(x, attended), h, P(p + "attention.output.LayerNorm.weight"), P(p + "attention.output.LayerNorm.bias"), d.LayerNormEps);
            var inner = Gelu(Linear(x, h, d.Intermediate, P(p + "intermediate.dense.weight"), P(p + "intermediate.dense.bias")));
            var ffn = Linear(inner, d.Intermediate, h, P(p + "output.dense.weight"), P(p + "output.dense.bias"));
            x = LayerNorm(Add(x, ffn), h, P(p + "output.LayerNorm.weight"), P(p + "output.LayerNorm.bias"), d.LayerNormEps);
        }
        var hidden = x;

        var transformed = Gelu(Linear(hidden, h, h, P("cls.predictions.transform.dense.weight"), P("cls.predictions.transform.dense.bias")));
        transformed = LayerNorm(transformed, h, P("cls.predictions.transform.LayerNorm.weight"), P("cls.predictions.transform.LayerNorm.bias"), d.LayerNormEps);
        // Decoder: the word embedding (V, H) is already the [out, in] weight of a Linear H -> V.
        var logits = Linear(transformed, h, d.VocabSize, word, P("cls.predictions.bias"));

        var sum = 0.0;
        var count = 0;
        for (var r = 0; r < n; r++)
        {
            var label = labels[r];
            if (label == ignoreIndex) continue;
            if (label < 0 || label >= d.VocabSize) throw new ArgumentException($"Label {label} at {r} is outside the vocabulary.");
            var row = logits.AsSpan(r * d.VocabSize, d.VocabSize);
            var max = double.NegativeInfinity;
            foreach (var z in row) max = Math.Max(max, z);
            var partition = 0.0;
            foreach (var z in row) partition += Math.Exp(z - max);
            sum += max + Math.Log(partition) - row[label];
            count++;
        }
        return new Result(count == 0 ? double.NaN : sum / count, count, logits, hidden);
    }

    /// <summary>Multi-head attention of (N, H) projections; key j of sequence b is skipped when its input id is padding.</summary>
    private static double[] SelfAttention(double[] q, double[] k, double[] v, int[] inputIds, Dims d, int b, int t)
    {
        int h = d.Hidden, hs = h / d.Heads;
        var scale = 1.0 / Math.Sqrt(hs);
        var output = new double[b * t * h];
        var weights = new double[t];
        for (var s = 0; s < b; s++)
        for (var head = 0; head < d.Heads; head++)
        for (var i = 0; i < t; i++)
        {
            var qi = (s * t + i) * h + head * hs;
            var max = double.NegativeInfinity;
            for (var j = 0; j < t; j++)
            {
                if (inputIds[s * t + j] == d.PadTokenId) continue;
                var kj = (s * t + j) * h + head * hs;
                var dot = 0.0;
                for (var c = 0; c < hs; c++) dot += q[qi + c] * k[kj + c];
                weights[j] = dot * scale;
                max = Math.Max(max, weights[j]);
            }
            var total = 0.0;
            for (var j = 0; j < t; j++)
            {
                if (inputIds[s * t + j] == d.PadTokenId) continue;
                weights[j] = Math.Exp(weights[j] - max);
                total += weights[j];
            }
            for (var j = 0; j < t; j++)
            {
                if (inputIds[s * t + j] == d.PadTokenId) continue;
                var vj = (s * t + j) * h + head * hs;
                for (var c = 0; c < hs; c++) output[qi + c] += weights[j] / total * v[vj + c];
            }
        }
        return output;
    }

    /// <summary>(N, out) = (N, in) times the [out, in] weight's transpose, plus the bias.</summary>
    private static double[] Linear(double[] x, int inSize, int outSize, double[] weight, double[] bias)
    {
        var n = x.Length / inSize;
        var y = new double[n * outSize];
        for (var r = 0; r < n; r++)
            for (var o = 0; o < outSize; o++)
            {
                var acc = bias[o];
                for (var i = 0; i < inSize; i++) acc += weight[o * inSize + i] * x[r * inSize + i];
                y[r * outSize + o] = acc;
            }
        return y;
    }

    private static double[] LayerNorm(double[] x, int h, double[] weight, double[] bias, double eps)
    {
        var y = new double[x.Length];
        for (var r = 0; r < x.Length / h; r++)
        {
            var row = x.AsSpan(r * h, h);
            var mean = 0.0;
            foreach (var z in row) mean += z;
            mean /= h;
            var variance = 0.0;
            foreach (var z in row) variance += (z - mean) * (z - mean);
            variance /= h;
            var inv = 1.0 / Math.Sqrt(variance + eps);
            for (var c = 0; c < h; c++) y[r * h + c] = (row[c] - mean) * inv * weight[c] + bias[c];
        }
        return y;
    }

    private static double[] Gelu(double[] x) => x.Select(z => 0.5 * z * (1.0 + SpecialFunctions.Erf(z / Math.Sqrt(2.0)))).ToArray();

    private static double[] Add(double[] a, double[] b) => a.Zip(b, (p, q) => p + q).ToArray();
}
