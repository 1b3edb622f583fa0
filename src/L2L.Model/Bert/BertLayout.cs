// BERT's name table: Hugging Face BertForMaskedLM tensor names and PyTorch Linear [out, in] shapes, one block per layer.
namespace L2L.Model.Bert;

/// <summary>
/// The BERT layers: <c>embedding</c> (<c>bert.embeddings.*</c>), <c>layer.0</c> … <c>layer.{L-1}</c>
/// (<c>bert.encoder.layer.{i}.*</c>) and <c>head</c> (<c>cls.predictions.*</c>, whose decoder weight is
/// the word embedding). Inside a block the query, key and value weights are stored back to back, and
/// so are their biases, so together they are one (3H, H) matrix and one 3H bias: a single product
/// yields q, k and v side by side, the layout the attention kernels read.
/// </summary>
internal static class BertLayout
{
    /// <summary>Prefix of the encoder's tensors in <c>BertForMaskedLM</c> checkpoints; some checkpoints omit it.</summary>
    public const string EncoderPrefix = "bert.";

    public static List<LayerLayout> Layers(BertConfig config)
    {
        int h = config.HiddenSize, i = config.IntermediateSize;
        var layers = new List<LayerLayout>
        {
            new(0, "embedding", LayerKind.Embedding, EncoderPrefix + "embeddings.",
            [
                ("word_embeddings.weight", [config.VocabSize, h], true),
                ("position_embeddings.weight", [config.MaxPositions, h], true),
                ("token_type_embeddings.weight", [config.TypeVocabSize, h], true),
                ("LayerNorm.weight", [h], false),
                ("LayerNorm.bias", [h], false),
            ]),
        };
        for (var l = 0; l < config.Layers; l++)
        {
            layers.Add(new LayerLayout(l + 1, $"layer.{l}", LayerKind.Block, $"{EncoderPrefix}encoder.layer.{l}.",
            [
                ("attention.self.query.weight", [h, h], true),
                ("attention.self.key.weight", [h, h], true),
                ("attention.self.value.weight", [h, h], true),
                ("attention.self.query.bias", [h], false),
                ("attention.self.key.bias", [h], false),
                ("attention.self.value.bias", [h], false),
                ("attention.output.dense.weight", [h, h], true),
                ("attention.output.dense.bias", [h], false),
                ("attention.output.LayerNorm.weight", [h], false),
                ("attention.output.LayerNorm.bias", [h], false),
                ("intermediate.dense.weight", [i, h], true),
                ("intermediate.dense.bias", [i], false),
                ("output.dense.weight", [h, i], true),
                ("output.dense.bias", [h], false),
                ("output.LayerNorm.weight", [h], false),
                ("output.LayerNorm.bias", [h], false),
            ]));
        }
        layers.Add(new LayerLayout(config.Layers + 1, "head", LayerKind.Head, "cls.predictions.",
        [
            ("transform.dense.weight", [h, h], true),
            ("transform.dense.bias", [h], false),
            ("transform.LayerNorm.weight", [h], false),
            ("transform.LayerNorm.bias", [h], false),
            ("bias", [config.VocabSize], false),
        ]));
        return layers;
    }
}
